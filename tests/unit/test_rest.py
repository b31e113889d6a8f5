"""Braid's HTTP client for the API server (kube/rest.py): kubeconfigs as client-go reads them,
exec credential plugins, token files, errors in the API server's words, watches — against a
loopback HTTP server that answers as the API server does (the real API server is behind every
e2e test)."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from braid.kube import rest
from braid.kube.rest import ApiError, ConfigError, Credentials, Rest


def kubeconfig(
    path: Path,
    *,
    user: dict[str, Any],
    server: str = "https://10.0.0.1:6443",
    cluster: dict[str, Any] | None = None,
    current: str = "main",
    namespace: str | None = "team",
) -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "main", "context": context}],
                "current-context": current,
            }
        )
    )
    return path


def test_a_token_user_and_the_contexts_namespace(tmp_path: Path):
    found = rest.from_kubeconfig(str(kubeconfig(tmp_path / "k", user={"token": "abc"})))
    assert (found.server, found.token, found.namespace) == ("https://10.0.0.1:6443", "abc", "team")
    assert rest.contexts(str(tmp_path / "k")) == (["main"], "main")


def test_relative_files_are_read_beside_the_kubeconfig(tmp_path: Path):
    (tmp_path / "pki").mkdir()
    path = kubeconfig(
        tmp_path / "k",
        user={"client-certificate": "pki/u.crt", "client-key": "pki/u.key"},
        cluster={"certificate-authority": "pki/ca.crt"},
    )
    found = rest.from_kubeconfig(str(path))
    assert found.ca_file == str(tmp_path / "pki/ca.crt")
    assert (found.cert_file, found.key_file) == (
        str(tmp_path / "pki/u.crt"),
        str(tmp_path / "pki/u.key"),
    )


def test_embedded_data_is_decoded(tmp_path: Path):
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    path = kubeconfig(
        tmp_path / "k",
        user={"client-certificate-data": b64("CERT"), "client-key-data": b64("KEY")},
        cluster={"certificate-authority-data": b64("CA")},
    )
    found = rest.from_kubeconfig(str(path))
    assert (found.ca_data, found.cert_data, found.key_data) == (b"CA", b"CERT", b"KEY")


def test_kubeconfig_files_merge_the_first_one_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = kubeconfig(tmp_path / "a", user={"token": "first"}, current="")
    second = kubeconfig(tmp_path / "b", user={"token": "second"}, server="https://other:1")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    found = rest.from_kubeconfig()
    # current-context only in the second file; cluster and user from the first
    assert (found.server, found.token) == ("https://10.0.0.1:6443", "first")


@pytest.mark.parametrize(
    ("user", "context", "message"),
    [
        (
            {"auth-provider": {"name": "gcp"}},
            None,
            "uses an auth-provider, which Braid does not support",
        ),
        ({"username": "a", "password": "b"}, None, "basic auth"),
        ({"token": "x"}, "other", "no context named 'other' (there are: main)"),
    ],
)
def test_what_cannot_be_used_is_said(
    tmp_path: Path, user: dict[str, Any], context: str | None, message: str
):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rest.from_kubeconfig(str(kubeconfig(tmp_path / "k", user=user)), context)


def test_no_kubeconfig_at_all(tmp_path: Path):
    with pytest.raises(ConfigError, match="no kubeconfig found at"):
        rest.from_kubeconfig(str(tmp_path / "missing"))


def test_not_yaml(tmp_path: Path):
    (tmp_path / "k").write_text("clusters: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        rest.from_kubeconfig(str(tmp_path / "k"))


# ---- against a loopback server ----------------------------------------------------------


@asynccontextmanager
async def api_server(handler: Callable[[web.Request], Any]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_requests_carry_the_token_the_query_and_json():
    seen: list[tuple[str, str, str | None, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.path_qs, request.headers.get("Authorization"), body))
        return web.json_response({"kind": "Pod", "metadata": {"name": "p"}}, status=201)

    async def go() -> Any:
        async with api_server(handler) as url:
            api = Rest(Credentials(server=url, token="t0k"))
            try:
                return await api.json(
                    "POST",
                    "/api/v1/namespaces/ns/pods",
                    query=[("dryRun", "All"), ("x", True)],
                    body={"metadata": {"name": "p"}},
                )
            finally:
                await api.close()

    assert asyncio.run(go()) == {"kind": "Pod", "metadata": {"name": "p"}}
    assert seen == [
        (
            "POST",
            "/api/v1/namespaces/ns/pods?dryRun=All&x=true",
            "Bearer t0k",
            {"metadata": {"name": "p"}},
        )
    ]


def test_a_refusal_is_an_api_error_in_the_api_servers_words():
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "Status", "message": 'pods "p" is forbidden: nope', "code": 403}, status=403
        )

    async def go() -> None:
        async with api_server(handler) as url:
            api = Rest(Credentials(server=url))
            try:
                await api.json("GET", "/api/v1/namespaces/ns/pods/p")
            finally:
                await api.close()

    with pytest.raises(ApiError, match='pods "p" is forbidden: nope') as caught:
        asyncio.run(go())
    assert caught.value.status == 403


def test_no_answer_is_status_zero():
    async def go() -> None:
        api = Rest(Credentials(server="http://127.0.0.1:9"))  # discard port: nobody listens
        try:
            await api.request("GET", "/version")
        finally:
            await api.close()

    with pytest.raises(ApiError, match="could not be reached") as caught:
        asyncio.run(go())
    assert caught.value.status == 0


def test_a_watch_yields_its_events_even_a_large_one():
    big = "x" * 300_000  # longer than a read from the socket

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.query["watch"] == "true"
        assert request.query["resourceVersion"] == "7"
        response = web.StreamResponse()
        await response.prepare(request)
        for kind, name in (("ADDED", "a"), ("MODIFIED", big)):
            line = json.dumps({"type": kind, "object": {"metadata": {"name": name}}})
            await response.write(line.encode() + b"\n")
        await response.write(b'{"type": "ERROR", "object": {"code": 410}}\n')
        return response

    async def go() -> list[tuple[str, int]]:
        async with api_server(handler) as url:
            api = Rest(Credentials(server=url))
            try:
                return [
                    (e["type"], len(str(e["object"])))
                    async for e in api.watch("/api/v1/pods", [("resourceVersion", "7")], seconds=5)
                ]
            finally:
                await api.close()

    kinds = asyncio.run(go())
    assert [k for k, _ in kinds] == ["ADDED", "MODIFIED", "ERROR"]
    assert kinds[1][1] > 300_000


def test_a_token_file_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    token = tmp_path / "token"
    token.write_text("one\n")
    credentials = Credentials(server="https://x", token_file=str(token))
    assert asyncio.run(credentials.bearer()) == "one"
    token.write_text("two\n")
    assert asyncio.run(credentials.bearer()) == "one"  # within the minute: kept
    monkeypatch.setattr(rest, "TOKEN_REREAD_SECONDS", -1)
    assert asyncio.run(credentials.bearer()) == "two"


def plugin(tmp_path: Path, status: dict[str, Any], *, exit_code: int = 0) -> dict[str, Any]:
    script = tmp_path / "plugin.py"
    counter = tmp_path / "runs"
    script.write_text(
        "import json, os, pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r}); p.write_text(str(int(p.read_text() or 0) + 1) if p.exists() else '1')\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['spec']['interactive'] is False\n"
        f"print(json.dumps({{'apiVersion': info['apiVersion'], 'kind': 'ExecCredential', 'status': {status!r} | {{'token': os.environ['TOKEN']}}}}))\n"
        f"sys.exit({exit_code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": sys.executable,
        "args": [str(script)],
        "env": [{"name": "TOKEN", "value": "from-plugin"}],
    }


def test_an_exec_plugin_gives_the_token_until_it_expires(tmp_path: Path):
    spec = plugin(tmp_path, {"expirationTimestamp": "2000-01-01T00:00:00Z"})
    path = kubeconfig(tmp_path / "k", user={"exec": spec})
    credentials = rest.from_kubeconfig(str(path))

    async def twice() -> list[str | None]:
        return [await credentials.bearer(), await credentials.bearer()]

    assert asyncio.run(twice()) == ["from-plugin", "from-plugin"]
    assert (tmp_path / "runs").read_text() == "2"  # expired already: asked again


def test_an_exec_plugin_without_expiry_is_asked_once(tmp_path: Path):
    credentials = Credentials(server="https://x", exec_plugin=plugin(tmp_path, {}))

    async def twice() -> list[str | None]:
        return [await credentials.bearer(), await credentials.bearer()]

    assert asyncio.run(twice()) == ["from-plugin", "from-plugin"]
    assert (tmp_path / "runs").read_text() == "1"


def test_a_failing_exec_plugin_is_named(tmp_path: Path):
    credentials = Credentials(server="https://x", exec_plugin=plugin(tmp_path, {}, exit_code=3))
    with pytest.raises(ConfigError, match=r"the exec plugin .* failed \(exit 3\)"):
        asyncio.run(credentials.bearer())

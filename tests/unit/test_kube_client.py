"""The operator's HTTP session: aiohttp's per-request environment lookups (proxy variables,
~/.netrc, each in a worker thread) are off only when there is nothing to find."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from braid.kube.client import PROXY_VARIABLES, _skip_env_lookups


def trusts_env(monkeypatch: pytest.MonkeyPatch, home: Path, **env: str) -> bool:
    for key in PROXY_VARIABLES:
        monkeypatch.delenv(key, raising=False)
        monkeypatch.delenv(key.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(home))

    async def session() -> bool:
        api = k8s.ApiClient()
        _skip_env_lookups(api)
        trusted = bool(api.rest_client.pool_manager._trust_env)
        await api.close()
        return trusted

    return asyncio.run(session())


def test_nothing_to_find_turns_the_lookups_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert not trusts_env(monkeypatch, tmp_path)


def test_a_proxy_variable_keeps_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert trusts_env(monkeypatch, tmp_path, HTTPS_PROXY="http://127.0.0.1:3128")


def test_a_netrc_keeps_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / ".netrc").write_text("machine example.com login a password b\n")
    assert trusts_env(monkeypatch, tmp_path)

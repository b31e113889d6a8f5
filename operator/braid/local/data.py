"""Secrets and ConfigMaps for a local run, so the manifest that runs in a cluster runs here
unchanged: from files of Kubernetes ``Secret`` and ``ConfigMap`` manifests (``braid run
--secrets FILE``; ``data`` base64, or ``stringData``), else from environment variables named
after the object and key (Secret ``openai``, key ``api-key``: ``OPENAI_API_KEY``).

A step process gets only what its manifest declares plus a small base (BASE_ENV), unless the
run is started with ``--inherit-env``: what works locally then works in a cluster too.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from braid.api.errors import FieldError, InvalidSpecError
from braid.api.workflow import EnvVarSource, KeySelector
from braid.engine import StartAttempt
from braid.webhook import SecretReader, SecretUnavailableError

# What every step process gets from the environment `braid run` was started in.
BASE_ENV = ("PATH", "HOME", "LANG", "TMPDIR")
HOW = "give it with --secrets FILE (a Secret or ConfigMap manifest) or set {env}"


class MissingDataError(Exception):
    """A Secret or ConfigMap a step reads is not there locally; the message says how to give it."""


def env_name(name: str, key: str) -> str:
    """The environment variable standing in for key ``key`` of object ``name``."""
    return re.sub(r"[^A-Z0-9]", "_", f"{name}_{key}".upper())


@dataclass
class LocalData:
    objects: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def load(cls, files: list[Path], environ: Mapping[str, str] | None = None) -> LocalData:
        """Read Secret and ConfigMap manifests; InvalidSpecError naming the file and field of
        anything that is not one."""
        data = cls(environ=dict(os.environ) if environ is None else environ)
        errors: list[FieldError] = []
        for path in files:
            try:
                docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            except (OSError, yaml.YAMLError) as exc:
                errors.append(FieldError(str(path), f"cannot read: {exc}"))
                continue
            for i, doc in enumerate(docs):
                where = f"{path}: document[{i}]"
                try:
                    kind, name, values = _object(doc)
                except ValueError as exc:
                    errors.append(FieldError(where, str(exc)))
                    continue
                data.objects[(kind, name)] = values
        if errors:
            raise InvalidSpecError(errors)
        return data

    def key(self, kind: str, ref: KeySelector) -> str | None:
        """One key: from the files, else the environment; None when optional and missing."""
        found = self.objects.get((kind, ref.name))
        if found is not None and ref.key in found:
            return found[ref.key]
        env = env_name(ref.name, ref.key)
        if env in self.environ:
            return self.environ[env]
        if ref.optional:
            return None
        raise MissingDataError(
            f"{kind} {ref.name!r} key {ref.key!r} is not given: {HOW.format(env=env)}"
        )

    def whole(self, kind: str, name: str, optional: bool) -> dict[str, str]:
        found = self.objects.get((kind, name))
        if found is None and not optional:
            raise MissingDataError(
                f"{kind} {name!r} (envFrom) is not given: give it with --secrets FILE"
            )
        return dict(found or {})


@dataclass(frozen=True)
class StepEnv:
    """A step process's environment, and the Secret values in it (to mask)."""

    env: dict[str, str]
    secrets: list[str]


def step_env(
    request: StartAttempt, data: LocalData, *, inherit: bool, run_uid: str = ""
) -> StepEnv:
    """What the process of a container attempt sees, as a Pod's container would: envFrom,
    then env (later entries win), then Braid's own variables. MissingDataError when a
    Secret or ConfigMap it needs is not there."""
    container = request.container
    assert container is not None
    base = (
        dict(data.environ)
        if inherit
        else {k: data.environ[k] for k in BASE_ENV if k in data.environ}
    )
    secrets: list[str] = []
    env: dict[str, str] = {}
    for source in container.env_from:
        if source.secret_ref is not None:
            values = data.whole("Secret", source.secret_ref.name, bool(source.secret_ref.optional))
            secrets += values.values()
        else:
            assert source.config_map_ref is not None
            cm = source.config_map_ref
            values = data.whole("ConfigMap", cm.name, bool(cm.optional))
        env.update({f"{source.prefix or ''}{k}": v for k, v in values.items()})
    env.update(container.env)
    for var in container.env_refs:
        assert var.value_from is not None
        value = _value(var.value_from, data, request, run_uid)
        if value is not None:
            env[var.name] = value
            if var.value_from.secret_key_ref is not None:
                secrets.append(value)
    return StepEnv({**base, **env}, secrets)


def _value(
    source: EnvVarSource, data: LocalData, request: StartAttempt, run_uid: str
) -> str | None:
    if source.secret_key_ref is not None:
        return data.key("Secret", source.secret_key_ref)
    if source.config_map_key_ref is not None:
        return data.key("ConfigMap", source.config_map_key_ref)
    assert source.field_ref is not None
    return pod_field(source.field_ref.field_path, request, run_uid)


def pod_field(path: str, request: StartAttempt, run_uid: str) -> str:
    """What the downward API would say, for a process on this machine."""
    labels = {
        "braid.dev/step": request.labels.step,
        "braid.dev/attempt": str(request.labels.attempt),
    }
    if (m := re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)) is not None:
        return labels.get(m.group(2), "") if m.group(1) == "labels" else ""
    return {
        "metadata.name": request.name,
        "metadata.namespace": "default",
        "metadata.uid": run_uid,
        "spec.nodeName": socket.gethostname(),
        "spec.serviceAccountName": "default",
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }.get(path, "")


def _object(doc: Any) -> tuple[str, str, dict[str, str]]:
    if not isinstance(doc, dict) or doc.get("kind") not in ("Secret", "ConfigMap"):
        got = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"kind: must be Secret or ConfigMap, got {got!r}")
    kind = str(doc["kind"])
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("metadata.name: required")
    values: dict[str, str] = {}
    for key, value in (doc.get("data") or {}).items():
        if kind == "Secret":
            try:
                values[str(key)] = base64.b64decode(str(value), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise ValueError(
                    f"data.{key}: not base64 (put plain text under stringData)"
                ) from None
        else:
            values[str(key)] = str(value)
    for key, value in (doc.get("stringData") or {}).items():
        values[str(key)] = str(value)
    return kind, name, values


def webhook_reader(data: LocalData) -> SecretReader:
    """Reads the Secret keys a webhook call needs, locally."""

    async def read(ref: KeySelector) -> str | None:
        try:
            return data.key("Secret", ref)
        except MissingDataError as exc:
            raise SecretUnavailableError(str(exc)) from None

    return read

"""Where artifacts are kept: an S3-compatible bucket (any endpoint: AWS, MinIO, versitygw,
Ceph, R2, ...) or, for `braid run`, a directory. Keys are deterministic per attempt —
``<prefix>/<namespace>/<run>/<attempt>/<name>`` — so a retried attempt writes beside the one
before (never over it, never twice), and a run's objects share one prefix that artifactGC
deletes with the run."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from braid.artifacts.files import ArtifactError

ACCESS_KEY, SECRET_KEY = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"


class Store(Protocol):
    def put(self, key: str, path: Path) -> str:
        """Store the file at ``key``; its uri."""

    def get(self, uri: str, path: Path) -> None:
        """Fetch ``uri`` into ``path``; ArtifactError when it cannot be read."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; how many."""


def run_prefix(prefix: str, namespace: str, run: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), namespace, run) if p) + "/"


def attempt_prefix(prefix: str, namespace: str, run: str, attempt: str) -> str:
    return f"{run_prefix(prefix, namespace, run)}{attempt}/"


@dataclass(frozen=True)
class Repository:
    """An S3-compatible artifact repository. Credentials come from AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (in a step Pod: from the Secret the operator is configured with)."""

    endpoint: str  # http(s)://host[:port]
    bucket: str
    prefix: str = "braid"
    region: str = "us-east-1"
    path_style: bool = True

    def wire(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> Repository:
        try:
            data = json.loads(text)
            repo = cls(**data)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"the artifact repository settings are invalid: {exc}") from None
        parts = urlsplit(repo.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ArtifactError(f"artifact endpoint {repo.endpoint!r}: write http(s)://host[:port]")
        return repo

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


class S3Store:
    def __init__(self, repo: Repository, environ: Mapping[str, str] | None = None) -> None:
        from minio import Minio  # noqa: PLC0415 - only where a bucket is used

        env = os.environ if environ is None else environ
        parts = urlsplit(repo.endpoint)
        self.repo = repo
        self.client = Minio(
            parts.netloc,
            access_key=env.get(ACCESS_KEY),
            secret_key=env.get(SECRET_KEY),
            secure=parts.scheme == "https",
            region=repo.region,
        )
        if not repo.path_style:
            self.client.enable_virtual_style_endpoint()  # type: ignore[no-untyped-call]

    def key_of(self, uri: str, scope: str = "") -> str:
        """The key of an s3:// uri in this repository's bucket, under ``scope``."""
        parts = urlsplit(uri)
        key = unquote(parts.path.lstrip("/"))
        if parts.scheme != "s3" or parts.netloc != self.repo.bucket or not key:
            raise ArtifactError(f"{uri[:200]}: not an artifact of bucket {self.repo.bucket}")
        if not key.startswith(scope) or "/../" in f"/{key}/":
            raise ArtifactError(f"{uri[:200]}: not an artifact of this namespace")
        return key

    def put(self, key: str, path: Path) -> str:
        from minio.error import MinioException  # noqa: PLC0415

        try:
            self.client.fput_object(self.repo.bucket, key, str(path))
        except (MinioException, OSError, ValueError) as exc:
            raise ArtifactError(f"storing {key}: {exc}") from None
        return self.repo.uri(key)

    def get(self, uri: str, path: Path, scope: str = "") -> None:
        from minio.error import MinioException  # noqa: PLC0415

        key = self.key_of(uri, scope)
        try:
            self.client.fget_object(self.repo.bucket, key, str(path))
        except (MinioException, OSError, ValueError) as exc:
            raise ArtifactError(f"fetching {uri[:200]}: {exc}") from None

    def delete_prefix(self, prefix: str) -> int:
        from minio.deleteobjects import DeleteObject  # noqa: PLC0415
        from minio.error import MinioException  # noqa: PLC0415

        try:
            names = [
                o.object_name
                for o in self.client.list_objects(self.repo.bucket, prefix=prefix, recursive=True)
                if o.object_name
            ]
            errors = list(
                self.client.remove_objects(self.repo.bucket, [DeleteObject(n) for n in names])
            )
        except (MinioException, OSError, ValueError) as exc:
            raise ArtifactError(f"deleting {prefix}: {exc}") from None
        if errors:
            raise ArtifactError(f"deleting {prefix}: {errors[0]}")
        return len(names)


class LocalStore:
    """A directory standing in for the bucket: file:// uris with the same keys."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path_of(self, uri: str) -> Path:
        parts = urlsplit(uri)
        path = Path(unquote(parts.path)).resolve()
        if parts.scheme != "file" or not path.is_relative_to(self.root):
            raise ArtifactError(f"{uri[:200]}: not an artifact of this run's store ({self.root})")
        return path

    def put(self, key: str, path: Path) -> str:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return target.as_uri()

    def get(self, uri: str, path: Path) -> None:
        source = self.path_of(uri)
        if not source.is_file():
            raise ArtifactError(f"{uri[:200]}: no such artifact")
        shutil.copyfile(source, path)

    def delete_prefix(self, prefix: str) -> int:
        target = self.root / prefix
        count = sum(1 for p in target.rglob("*") if p.is_file()) if target.is_dir() else 0
        shutil.rmtree(target, ignore_errors=True)
        return count

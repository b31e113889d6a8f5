"""A real S3 server for the tests: versitygw (an S3 gateway over a directory, built from the
Go module proxy into ~/.cache/braid by tests/cluster/build.sh), on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from minio import Minio

ROOT = Path(__file__).resolve().parents[1]
ACCESS, SECRET = "braid-test", "braid-test-secret-key"
BUCKET = "braid"


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str = BUCKET
    access_key: str = ACCESS
    secret_key: str = SECRET

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self) -> Minio:
        return Minio(
            self.endpoint.removeprefix("http://"),
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
        )

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(
            o.object_name
            for o in self.client().list_objects(self.bucket, prefix=prefix, recursive=True)
        )


def versitygw() -> str:
    built = subprocess.run(
        ["bash", str(ROOT / "tests" / "cluster" / "build.sh"), "versitygw"],
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    return built.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def s3_server() -> Iterator[S3]:
    binary = versitygw()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="braid-s3-") as tmp:
        root, meta = Path(tmp) / "root", Path(tmp) / "meta"
        root.mkdir()
        meta.mkdir()
        log = (Path(tmp) / "versitygw.log").open("wb")
        proc = subprocess.Popen(
            [binary, "--access", ACCESS, "--secret", SECRET, "--port", f"127.0.0.1:{port}",
             "posix", "--sidecar", str(meta), str(root)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            server = S3(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 30
            while True:
                try:
                    server.client().make_bucket(BUCKET)
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

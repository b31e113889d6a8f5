"""What a step attempt wrote under $BRAID_ARTIFACTS: regular files only (a symbolic link could
point at anything the uploader may read, its credentials included), named by their path
there, within the attempt's limits, each with its size and sha256."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from braid.api.workflow import ARTIFACT_PATH

CHUNK = 1 << 20


class ArtifactError(Exception):
    """The artifacts could not be collected, stored or fetched; the message says why."""

    too_large = False


class ArtifactsTooLargeError(ArtifactError):
    too_large = True


@dataclass(frozen=True)
class Found:
    name: str  # its path under the artifacts directory, with '/'
    path: Path
    size: int


def collect(root: Path, max_bytes: int, max_files: int) -> list[Found]:
    """Every file under ``root``, checked before anything is read or stored."""
    if not root.is_dir():
        return []
    found: list[Found] = []
    total = 0
    for directory, dirs, files in os.walk(root, followlinks=False):
        for entry in sorted([*dirs, *files]):
            path = Path(directory) / entry
            name = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise ArtifactError(f"{name}: a symbolic link; write the file itself")
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise ArtifactError(f"{name}: not a regular file")
            if len(name) > 255 or not re.fullmatch(ARTIFACT_PATH, name):
                raise ArtifactError(
                    f"{name[:100]!r}: artifact names are paths of letters, digits, '-', '_', "
                    "'.' and '/' (no part starting with '.'), at most 255 characters"
                )
            found.append(Found(name, path, info.st_size))
            total += info.st_size
            if len(found) > max_files:
                raise ArtifactsTooLargeError(
                    f"more than {max_files} artifact file(s); the limit is {max_files} "
                    "(artifactLimits.maxFiles): put many files in one archive"
                )
            if total > max_bytes:
                raise ArtifactsTooLargeError(
                    f"the artifacts pass {max_bytes} bytes (at {name}); the limit is "
                    f"{max_bytes} bytes (artifactLimits.maxBytes, or what the run has left)"
                )
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inside(root: Path, relative: str) -> Path:
    """``root/relative``, refusing anything that would land outside ``root``."""
    if not re.fullmatch(ARTIFACT_PATH, relative):
        raise ArtifactError(f"input path {relative!r} is not a relative path of safe parts")
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise ArtifactError(f"input path {relative!r} leaves the inputs directory")
    return target

"""What runs inside a step Pod, in Braid's own image, so the step's image needs nothing: an
init container fetches the input artifacts into $BRAID_INPUTS before the step starts; a
native sidecar waits for the step to end (the kubelet sends it SIGTERM once the step's
container has exited) and stores what the step left under $BRAID_ARTIFACTS.

Each reports in its termination message, which the operator reads from the Pod's status:
the sidecar ``{"a": [[name, size, sha256], ...]}`` (uris follow from the key prefix the
operator gave it) or ``{"error": ..., "tooLarge": bool}``. Everything comes from the
environment the operator sets (see kube/pods.py); the e2e tests run these same functions
with the same variables.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from braid.artifacts.files import ArtifactError
from braid.artifacts.store import Repository, S3Store
from braid.artifacts.transfer import download, upload
from braid.engine.actions import InputArtifact

MESSAGE_LIMIT = 4096  # the kubelet keeps this much of a termination message

ARTIFACTS, INPUTS = "BRAID_ARTIFACTS", "BRAID_INPUTS"
REPOSITORY = "BRAID_ARTIFACT_REPOSITORY"
KEY_PREFIX = "BRAID_ARTIFACT_PREFIX"  # where this attempt's files go
SCOPE = "BRAID_ARTIFACT_SCOPE"  # the namespace's prefix: inputs are read from under it only
MAX_BYTES, MAX_FILES = "BRAID_ARTIFACT_MAX_BYTES", "BRAID_ARTIFACT_MAX_FILES"
INPUT_LIST = "BRAID_INPUT_ARTIFACTS"
TERMINATION_LOG = "BRAID_TERMINATION_LOG"
READY = "BRAID_AGENT_READY"  # written once the sidecar waits: its startupProbe looks for it


def _report(environ: Mapping[str, str], message: Mapping[str, object]) -> None:
    text = json.dumps(message, separators=(",", ":"))
    Path(environ.get(TERMINATION_LOG, "/dev/termination-log")).write_text(text)


def fetch_inputs(environ: Mapping[str, str]) -> int:
    """The init container: every input artifact in place, or exit 1 saying which failed."""
    try:
        store = S3Store(Repository.parse(environ[REPOSITORY]), environ)
        items = [InputArtifact(**i) for i in json.loads(environ.get(INPUT_LIST, "[]"))]
        scope = environ.get(SCOPE, "")
        download(lambda uri, path: store.get(uri, path, scope), items, Path(environ[INPUTS]))
    except (ArtifactError, KeyError, ValueError, TypeError) as exc:
        _report(environ, {"error": f"input artifacts: {exc}"[:1000]})
        sys.stderr.write(f"braid: input artifacts: {exc}\n")
        return 1
    return 0


def store_outputs(environ: Mapping[str, str], wait: bool = True) -> int:
    """The sidecar: when the step has ended, store its files and say what was stored."""
    if wait:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        if environ.get(READY):
            Path(environ[READY]).write_text("waiting")
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    try:
        store = S3Store(Repository.parse(environ[REPOSITORY]), environ)
        stored = upload(
            store,
            Path(environ[ARTIFACTS]),
            environ[KEY_PREFIX],
            int(environ[MAX_BYTES]),
            int(environ[MAX_FILES]),
        )
    except (ArtifactError, KeyError, ValueError) as exc:
        too_large = isinstance(exc, ArtifactError) and exc.too_large
        _report(environ, {"error": str(exc)[:1000], "tooLarge": too_large})
        return 0
    message = {"a": [[name, a.size, a.sha256] for name, a in stored.items()]}
    if len(json.dumps(message, separators=(",", ":"))) > MESSAGE_LIMIT:
        _report(
            environ,
            {
                "error": f"the names of {len(stored)} artifacts do not fit in the 4 KiB the "
                "Pod can report: write fewer files (one archive) or shorter names",
                "tooLarge": True,
            },
        )
        return 0
    _report(environ, message)
    return 0


def parse_report(
    message: str | None, uri_prefix: str
) -> tuple[dict[str, object] | None, str | None, bool]:
    """(artifacts as Artifact fields by name, error, too large) from the sidecar's message."""
    if not message:
        return None, "the artifact sidecar reported nothing (it did not run to its end)", False
    try:
        data = json.loads(message)
    except ValueError:
        return None, "the artifact sidecar's report is not JSON", False
    if not isinstance(data, dict):
        return None, "the artifact sidecar's report is not an object", False
    if "error" in data:
        return None, str(data["error"])[:1000], bool(data.get("tooLarge"))
    out: dict[str, object] = {}
    for entry in data.get("a") or []:
        if not (isinstance(entry, list) and len(entry) == 3):
            return None, "the artifact sidecar's report is malformed", False
        name, size, sha = entry
        out[str(name)] = {"size": size, "sha256": sha, "uri": f"{uri_prefix}{name}"}
    return out, None, False

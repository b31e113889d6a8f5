"""The one way the CLI calls kubectl: the user's kubeconfig, context, namespace and
impersonation apply unchanged, and what it writes is exactly what plain kubectl would write."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any


class KubectlError(Exception):
    """kubectl failed; the message is what it said."""


@dataclass
class Kubectl:
    namespace: str | None = None
    context: str | None = None
    as_user: str | None = None
    as_groups: list[str] = field(default_factory=list)

    def _base(self) -> list[str]:
        args = ["kubectl"]
        if self.context:
            args += ["--context", self.context]
        if self.namespace:
            args += ["-n", self.namespace]
        if self.as_user:
            args += [f"--as={self.as_user}"]
        args += [f"--as-group={g}" for g in self.as_groups]
        return args

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [*self._base(), *args], input=stdin, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise KubectlError(result.stderr.strip() or f"kubectl {' '.join(args)} failed")
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self("-o", "json", *args))

    def whoami(self) -> str:
        return self("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").strip()

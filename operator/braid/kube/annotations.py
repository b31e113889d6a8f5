"""People's decisions as they write them on a run, into the engine's ApprovalDecisions. Pure.

``approve.braid.dev/<step>: alice,bob:<digest>`` — each approver adds their own entry;
``reject.braid.dev/<step>: "carol: too risky"`` — who rejected, then ``": "``, then why.
When the admission policy (charts/braid/templates/approval-policy.yaml) is enforced, each
entry names the person who wrote it and they may decide the gate, including through their
groups, which only the API server knows.
"""

from __future__ import annotations

import re

from braid.api.reasons import APPROVE_PREFIX, REJECT_PREFIX
from braid.engine import DIGEST_LENGTH, ApprovalDecision

_DIGEST_SUFFIX = re.compile(rf"^(?P<user>.+):(?P<digest>[0-9a-f]{{{DIGEST_LENGTH}}})$")


def entry(raw: str) -> tuple[str, str | None]:
    """``alice`` or ``alice:<digest>`` (approving the inputs with that digest). User names may
    hold colons (``system:serviceaccount:ns:bot``, ``oidc:alice``): only a final ``:`` followed
    by a whole digest is one."""
    match = _DIGEST_SUFFIX.match(raw)
    return (match["user"], match["digest"]) if match else (raw, None)


def approval_value(existing: str, user: str, digest: str) -> str:
    """The approval annotation with this user's entry added after everyone else's (what
    ``kubectl braid approve`` and the web UI write)."""
    entries = [e for e in (x.strip() for x in existing.split(",")) if e]
    mine = f"{user}:{digest}"
    if mine in entries:
        return ",".join(entries)
    return ",".join([*entries, mine])


def decisions_from(annotations: dict[str, str], *, verified: bool) -> list[ApprovalDecision]:
    """``verified``: the admission policy is enforced, so names are the API server's word."""
    out = []
    for key, value in annotations.items():
        if key.startswith(APPROVE_PREFIX):
            step = key[len(APPROVE_PREFIX) :]
            for raw in filter(None, (e.strip() for e in value.split(","))):
                user, digest = entry(raw)
                out.append(
                    ApprovalDecision(step, user, approve=True, digest=digest, admitted=verified)
                )
        elif key.startswith(REJECT_PREFIX):
            # The user name ends at the first ": " (colon and space), so names with colons
            # keep them whole.
            user, sep, reason = value.partition(": ")
            if not sep:
                user, reason = value.removesuffix(":"), ""
            out.append(
                ApprovalDecision(
                    key[len(REJECT_PREFIX) :],
                    user.strip(),
                    approve=False,
                    reason=reason.strip() or "no reason given",
                    admitted=verified,
                )
            )
    return out

"""Browser sessions of the web UI, and their CSRF tokens.

A session is a random id in a cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` behind
TLS); what it stands for stays in this process: the bearer token a user signed in with (the
chart's UI) — never written to a cookie, a URL or a log — and the CSRF token every form and
every htmx request must send back. With ``braid ui`` on a laptop there is no sign-in (the
kubeconfig is the identity) but still a session, so that a page from another site cannot post
a decision through the user's browser. Sessions end after ``TTL`` of disuse or on sign-out;
the token's own expiry (a ``kubectl create token``) is the API server's to enforce.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COOKIE = "braid_session"
TTL = 8 * 3600.0  # seconds a session lives without use
MAX_SESSIONS = 10_000  # beyond this the least recently used are dropped


@dataclass
class Session:
    id: str
    csrf: str
    seen: float
    token: str | None = None  # the user's bearer token (sign-in mode only)
    api: Any = None  # the user's API client, made once per session
    user: str = ""
    groups: tuple[str, ...] = field(default_factory=tuple)

    def __repr__(self) -> str:  # never the token, whatever logs a session
        return f"Session(user={self.user!r})"


class Sessions:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.by_id: dict[str, Session] = {}
        self.dropped: list[Session] = []  # expired, their API clients still to be closed

    def new(self, token: str | None = None) -> Session:
        self._expire()
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock(), token=token
        )
        self.by_id[session.id] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self.by_id.get(sid)
        if session is None or self.clock() - session.seen > TTL:
            if self.by_id.pop(sid, None) is not None and session is not None:
                self.dropped.append(session)
            return None
        session.seen = self.clock()
        return session

    def end(self, sid: str | None) -> Session | None:
        return self.by_id.pop(sid or "", None)

    def _expire(self) -> list[Session]:
        now = self.clock()
        gone = [s for s in self.by_id.values() if now - s.seen > TTL]
        if len(self.by_id) - len(gone) >= MAX_SESSIONS:
            alive = sorted((s for s in self.by_id.values() if s not in gone), key=lambda s: s.seen)
            gone += alive[: len(alive) - MAX_SESSIONS + 1]
        for s in gone:
            self.by_id.pop(s.id, None)
        self.dropped += gone
        return gone

    def drain(self) -> list[Session]:
        dropped, self.dropped = self.dropped, []
        return dropped


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, sent or "")

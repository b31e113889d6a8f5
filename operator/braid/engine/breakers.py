"""Circuit breakers shared by every run an operator (or local runner) drives. Pure: the
driver owns one board, hands it to each decision and exports what it shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from braid.api.run import BreakerStatus, WorkflowRunStatus
from braid.api.workflow import CircuitBreakerSpec

State = Literal["Closed", "Open", "HalfOpen"]


class Guarded(Protocol):
    """What passes a breaker: an action with its breaker and fallback (engine.plan)."""

    @property
    def breaker(self) -> CircuitBreakerSpec | None: ...

    @property
    def fallback(self) -> object | None: ...


@dataclass
class Breaker:
    state: State = "Closed"
    failures: int = 0  # consecutive
    opened_at: datetime | None = None
    cool_down_seconds: float = 60.0
    probe: str | None = None  # the attempt probing while half-open

    @property
    def retry_at(self) -> datetime | None:
        if self.state != "Open" or self.opened_at is None:
            return None
        return self.opened_at + timedelta(seconds=self.cool_down_seconds)


SEEN_LIMIT = 10_000


@dataclass
class RouteStats:
    """One routing candidate's statistics (engine/routing.py), by "<key>/<candidate>"."""

    latency: float | None = None  # EWMA seconds
    success: float | None = None  # EWMA of 1 (succeeded) and 0 (failed)
    calls: int = 0
    selected: int = 0


@dataclass
class BreakerBoard:
    breakers: dict[str, Breaker] = field(default_factory=dict)
    version: int = 0  # bumped on every change, so drivers know when to export
    # Attempts already counted: a driver may show the engine the same result twice (a status
    # write that conflicted is decided again), and a failure must count once.
    seen: dict[str, None] = field(default_factory=dict)
    routes: dict[str, RouteStats] = field(default_factory=dict)  # routed calls' candidates

    def get(self, key: str) -> Breaker:
        return self.breakers.get(key) or Breaker()

    def admit(self, key: str, attempt: str, now: datetime) -> bool:
        """May this attempt go through the breaker now? Open: no, until the cool-down has
        passed; then exactly one attempt probes (half-open) and the rest still fail fast."""
        b = self.breakers.get(key)
        if b is None or b.state == "Closed" or b.probe == attempt:
            return True
        retry_at = b.retry_at
        if b.state == "Open" and retry_at is not None and now >= retry_at:
            b.state, b.probe = "HalfOpen", attempt
            self.version += 1
            return True
        return False

    def record(
        self,
        key: str,
        attempt: str,
        *,
        ok: bool,
        now: datetime,
        threshold: int,
        cool_down_seconds: float,
    ) -> None:
        if attempt in self.seen:
            return
        self.seen[attempt] = None
        if len(self.seen) > SEEN_LIMIT:
            del self.seen[next(iter(self.seen))]
        b = self.breakers.setdefault(key, Breaker())
        b.cool_down_seconds = cool_down_seconds
        if ok:
            if b.state != "Closed" or b.failures:
                b.state, b.failures, b.opened_at, b.probe = "Closed", 0, None, None
                self.version += 1
            return
        b.failures += 1
        if b.state == "HalfOpen" or b.failures >= threshold:
            b.state, b.opened_at, b.probe = "Open", now, None
        self.version += 1

    def abandon(self, key: str, attempt: str, now: datetime) -> None:
        """A probe was cancelled before it told anything: let the next attempt probe."""
        b = self.breakers.get(key)
        if b is not None and b.state == "HalfOpen" and b.probe == attempt:
            b.state, b.probe = "Open", None
            b.opened_at = now - timedelta(seconds=b.cool_down_seconds)
            self.version += 1


@dataclass(frozen=True)
class Passage:
    """How an attempt goes through its circuit breaker."""

    kind: Literal["through", "fallback", "open"]
    message: str = ""


def passage(board: BreakerBoard | None, action: Guarded, attempt: str, now: datetime) -> Passage:
    """Through when the action has no breaker, or its breaker admits the attempt; else its
    fallback if it has one; else it fails fast, saying until when the breaker stays open."""
    if board is None or action.breaker is None:
        return Passage("through")
    key, fallback = action.breaker.key, action.fallback is not None
    if board.admit(key, attempt, now):
        return Passage("through")
    if fallback:
        return Passage("fallback", f"Circuit breaker {key} is open")
    state = board.get(key)
    until = f" until {state.retry_at.isoformat()}" if state.retry_at else ""
    return Passage(
        "open",
        f"circuit breaker {key} is open{until} after {state.failures} consecutive failures",
    )


def record(
    board: BreakerBoard | None, action: Guarded, attempt: str, ok: bool, now: datetime
) -> None:
    """An attempt behind a breaker ended: count it."""
    b = action.breaker
    if board is not None and b is not None:
        board.record(
            b.key,
            attempt,
            ok=ok,
            now=now,
            threshold=b.failure_threshold,
            cool_down_seconds=b.cool_down_seconds,
        )


def abandon(board: BreakerBoard | None, action: Guarded, attempt: str, now: datetime) -> None:
    """An attempt behind a breaker was cancelled."""
    if board is not None and action.breaker is not None:
        board.abandon(action.breaker.key, attempt, now)


def show(status: WorkflowRunStatus, board: BreakerBoard | None, keys: Sequence[str]) -> bool:
    """What the run's status shows of the breakers its steps go through; True if changed."""
    if board is None or not keys:
        return False
    shown = [BreakerStatus.of(k, board.get(k)) for k in keys]
    if shown == (status.circuit_breakers or []):
        return False
    status.circuit_breakers = shown
    return True

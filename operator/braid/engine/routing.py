"""Adaptive routing: which candidate (endpoint, model) an attempt of a routed llm or webhook
call goes to, from statistics every run routing with the same key shares. Pure: the
statistics live on the driver's BreakerBoard (with a breaker per candidate), handed to each
decision like the breakers themselves.

Per candidate the board keeps an EWMA of the call latency and of success (1 or 0), the
calls counted and how often it was chosen (``braid_route_selected_total``). An attempt goes
to a candidate whose breaker admits it and that has not failed this step yet (when all have,
they are tried again), picked by the strategy:

- Ordered: the first, in the order listed (a fallback chain);
- LowestLatency / HighestSuccess: the best by its EWMA; a candidate without statistics is
  tried first (in order), so each is measured before it is judged;
- Cheapest: the lowest declared cost per token (+ per call); unpriced candidates last.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from braid.api.run import RouteStatus, TaskStatus
from braid.api.workflow import RoutingStrategy
from braid.engine.breakers import BreakerBoard, RouteStats
from braid.engine.plan import CandidatePlan, RoutePlan

ALPHA = 0.3  # weight of the newest call in the moving averages


def stats(board: BreakerBoard, key: str) -> RouteStats:
    return board.routes.get(key) or RouteStats()


def route(
    plan: RoutePlan, board: BreakerBoard | None, st: TaskStatus, attempt: str, now: datetime
) -> CandidatePlan | str:
    """The candidate this attempt goes to, recorded in ``st.route`` with why; or why none
    can take it (every breaker open)."""
    board = board if board is not None else BreakerBoard()
    failed = list(st.route.failed or []) if st.route else []
    open_: list[CandidatePlan] = []
    usable: list[CandidatePlan] = []
    for c in plan.candidates:
        b = board.get(plan.breaker_key(c.name))
        waiting = b.state == "Open" and (b.retry_at is None or now < b.retry_at)
        probing = b.state == "HalfOpen" and b.probe not in (None, attempt)
        (open_ if waiting or probing else usable).append(c)
    if not usable:
        names = ", ".join(c.name for c in open_)
        return f"every candidate's circuit breaker is open ({names})"
    fresh = [c for c in usable if c.name not in failed] or usable  # all failed: from the top
    pick, why = _pick(plan, fresh, lambda c: stats(board, plan.breaker_key(c.name)))
    key = plan.breaker_key(pick.name)
    board.admit(key, attempt, now)  # after a cool-down this attempt is the probe
    board.routes.setdefault(key, RouteStats()).selected += 1
    passed = [f"{c.name} (breaker open)" for c in open_]
    passed += [f"{c.name} (failed here)" for c in usable if c not in fresh]
    if passed:
        why += f"; passed over {', '.join(passed)}"
    st.route = RouteStatus(candidate=pick.name, reason=why, failed=failed or None)
    return pick


def _pick(
    plan: RoutePlan, fresh: list[CandidatePlan], of: Callable[[CandidatePlan], RouteStats]
) -> tuple[CandidatePlan, str]:
    strategy = plan.spec.strategy
    if strategy == RoutingStrategy.ORDERED:
        return fresh[0], "Ordered: first available in order"
    if strategy == RoutingStrategy.CHEAPEST:
        best = min(fresh, key=lambda c: (_price(c), plan.candidates.index(c)))
        price = _price(best)
        said = f"{price:g} per token and call" if math.isfinite(price) else "no costs declared"
        return best, f"Cheapest: {said}"
    figure = "latency" if strategy == RoutingStrategy.LOWEST_LATENCY else "success"
    unmeasured = [c for c in fresh if getattr(of(c), figure) is None]
    if unmeasured:
        return unmeasured[0], f"{strategy.value}: no {figure} measured yet, tried first"
    if figure == "latency":
        best = min(fresh, key=lambda c: of(c).latency or 0.0)
        shown = ", ".join(f"{c.name} {of(c).latency or 0:.3f}s" for c in fresh)
        return best, f"LowestLatency: EWMA latency {shown}"
    best = max(fresh, key=lambda c: of(c).success or 0.0)
    shown = ", ".join(f"{c.name} {of(c).success or 0:.0%}" for c in fresh)
    return best, f"HighestSuccess: EWMA success {shown}"


def _price(c: CandidatePlan) -> float:
    if not c.priced:
        return math.inf
    return c.cost_per_input_token + c.cost_per_output_token + c.cost_per_call


def observe(
    plan: RoutePlan,
    board: BreakerBoard | None,
    st: TaskStatus,
    attempt: str,
    ok: bool,
    now: datetime,
) -> None:
    """An attempt of a routed call ended: its candidate's statistics and breaker learn it."""
    if st.route is None:
        return
    name = st.route.candidate
    if not ok and name not in (st.route.failed or []):
        st.route.failed = [*(st.route.failed or []), name]  # its retry goes elsewhere
    if board is None:
        return
    key = plan.breaker_key(name)
    s = board.routes.setdefault(key, RouteStats())
    seconds = (now - st.attempt_start_time).total_seconds() if st.attempt_start_time else 0.0
    s.calls += 1
    s.latency = seconds if s.latency is None else (1 - ALPHA) * s.latency + ALPHA * seconds
    hit = 1.0 if ok else 0.0
    s.success = hit if s.success is None else (1 - ALPHA) * s.success + ALPHA * hit
    spec = plan.spec
    board.record(
        key,
        attempt,
        ok=ok,
        now=now,
        threshold=spec.failure_threshold,
        cool_down_seconds=spec.cool_down_seconds,
    )


def abandon(
    plan: RoutePlan, board: BreakerBoard | None, st: TaskStatus, attempt: str, now: datetime
) -> None:
    """A routed attempt was cancelled: a probe it was lets the next attempt probe."""
    if st.route is not None and board is not None:
        board.abandon(plan.breaker_key(st.route.candidate), attempt, now)


def priced(plan: RoutePlan, st: TaskStatus, outputs: dict[str, Any]) -> dict[str, Any]:
    """The outputs with the chosen candidate's cost added to usage.cost (budgets count it)."""
    chosen = next((c for c in plan.candidates if st.route and c.name == st.route.candidate), None)
    if chosen is None or not chosen.priced:
        return outputs
    reported = outputs.get("usage")
    usage: dict[str, Any] = reported if isinstance(reported, dict) else {}
    tokens_in, tokens_out = (
        n if isinstance(n := usage.get(k), int) and not isinstance(n, bool) else 0
        for k in ("inputTokens", "outputTokens")
    )
    cost = (
        tokens_in * chosen.cost_per_input_token
        + tokens_out * chosen.cost_per_output_token
        + chosen.cost_per_call
    )
    return {**outputs, "usage": {**usage, "cost": round(cost, 10)}}

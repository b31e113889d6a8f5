"""Model calls over past runs: per llm step (top level or in a loop body), which models and
routing candidates answered, tokens per call, how replies finished, and a recommendation when
replies keep stopping at maxTokens. Read from what the runs' statuses keep (outputs.model,
.usage, .finishReason, .contentTruncated, route); the full prompts and replies stay in each
attempt's request.json/response.json artifacts for audit."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from braid.api.analysis import ModelCallStats, Recommendation
from braid.api.run import StepPhase, TaskStatus, WorkflowRunStatus
from braid.api.workflow import LLMSpec, WorkflowSpec

STOPPED_AT_LIMIT = 0.2  # share of replies cut at maxTokens that earns a recommendation


def _llm_steps(spec: WorkflowSpec) -> dict[str, tuple[str | None, LLMSpec]]:
    """llm steps by name: (the loop they are in, or None; their spec)."""
    out: dict[str, tuple[str | None, LLMSpec]] = {}
    for step in spec.steps:
        if step.llm is not None:
            out[step.name] = (None, step.llm)
        for body in step.loop.steps if step.loop else []:
            if body.llm is not None:
                out[body.name] = (step.name, body.llm)
    return out


def _calls(run: WorkflowRunStatus, name: str, loop: str | None) -> Iterator[TaskStatus]:
    for st in run.steps:
        if loop is None and st.name == name:
            yield st
        if loop is not None and st.name == loop:
            for it in st.iterations or []:
                yield from (b for b in it.steps if b.name == name)


def model_calls(spec: WorkflowSpec, runs: list[WorkflowRunStatus]) -> list[ModelCallStats]:
    out = []
    for name, (loop, _) in _llm_steps(spec).items():
        models: Counter[str] = Counter()
        routes: Counter[str] = Counter()
        finishes: Counter[str] = Counter()
        tokens: dict[str, list[int]] = defaultdict(list)
        calls = truncated = 0
        for run in runs:
            for st in _calls(run, name, loop):
                if st.phase != StepPhase.SUCCEEDED or not st.outputs:
                    continue
                o: dict[str, Any] = st.outputs
                calls += 1
                models[str(o.get("model") or "?")] += 1
                finishes[str(o.get("finishReason") or "?")] += 1
                truncated += bool(o.get("contentTruncated"))
                if st.route is not None:
                    routes[st.route.candidate] += 1
                reported = o.get("usage")
                usage: dict[str, Any] = reported if isinstance(reported, dict) else {}
                for key in ("inputTokens", "outputTokens"):
                    if isinstance(n := usage.get(key), int):
                        tokens[key].append(n)
        if not calls:
            continue
        out.append(
            ModelCallStats(
                step=name,
                loop=loop,
                calls=calls,
                models=dict(models),
                candidates=dict(routes) or None,
                finish_reasons=dict(finishes),
                input_tokens=round(statistics.fmean(tokens["inputTokens"]), 1)
                if tokens["inputTokens"]
                else None,
                output_tokens=round(statistics.fmean(tokens["outputTokens"]), 1)
                if tokens["outputTokens"]
                else None,
                truncated=truncated,
            )
        )
    return out


def recommend(spec: WorkflowSpec, calls: list[ModelCallStats]) -> list[Recommendation]:
    """RaiseMaxTokens: replies that keep stopping at the limit lose their endings."""
    steps = _llm_steps(spec)
    out = []
    for c in calls:
        cut = c.finish_reasons.get("length", 0)
        if cut / c.calls < STOPPED_AT_LIMIT:
            continue
        limit = steps[c.step][1].max_tokens
        said = f"maxTokens {limit}" if limit else "the model's default limit"
        out.append(
            Recommendation(
                kind="RaiseMaxTokens",
                steps=[c.step],
                gain_seconds=0.0,
                message=f"Raise llm.maxTokens of {c.step}: its replies stop at {said}",
                evidence=f"{cut} of {c.calls} replies finished with finish_reason 'length'",
            )
        )
    return out

"""common-expression-language (Rust core) against cel-python (pure Python) on Braid-shaped
expressions: compile once, evaluate many times.

    pip install cel-python      # not a Braid dependency; only this comparison needs it
    python bench/cel_libraries.py
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

import cel

EXPRESSIONS = {
    "when": 'steps.classify.outputs.category == "billing" && params.enabled',
    "until": "steps.check.outputs.score >= params.passScore",
    "items": "steps.plan.outputs.subtasks.filter(s, size(s) > 3)",
}
CONTEXT = {
    "params": {"enabled": True, "passScore": 0.8},
    "steps": {
        "classify": {"phase": "Succeeded", "outputs": {"category": "billing"}},
        "check": {"phase": "Succeeded", "outputs": {"score": 0.9}},
        "plan": {"phase": "Succeeded", "outputs": {"subtasks": ["research", "messaging", "go"]}},
    },
}


def per_call_us(fn: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def main() -> None:
    try:
        import celpy  # noqa: PLC0415 - optional, only for this comparison
    except ImportError:
        celpy = None
        print("cel-python is not installed: `pip install cel-python` to compare")
    print("| expression | library | compile | evaluate |")
    print("|---|---|---:|---:|")
    for name, source in EXPRESSIONS.items():
        program = cel.compile(source)
        assert program.execute(CONTEXT) is not None
        print(
            f"| {name} | common-expression-language 0.10 | {per_call_us(lambda s=source: cel.compile(s), 2000):.0f} µs"
            f" | {per_call_us(lambda p=program: p.execute(CONTEXT), 2000):.0f} µs |"
        )
        if celpy is not None:
            env = celpy.Environment()
            prg = env.program(env.compile(source))
            activation = {k: celpy.json_to_cel(v) for k, v in CONTEXT.items()}
            print(
                f"| {name} | cel-python 0.5 | {per_call_us(lambda s=source, e=env: e.program(e.compile(s)), 200):.0f} µs"
                f" | {per_call_us(lambda p=prg, a=activation: p.evaluate(a), 500):.0f} µs |"
            )


if __name__ == "__main__":
    main()

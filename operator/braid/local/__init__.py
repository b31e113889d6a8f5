"""The local runner: carries out the engine's actions as processes and HTTP calls.

Decides nothing; all policy (ordering, retries, timeouts, outputs) is the engine's.
"""

from braid.local.runner import LocalRun

__all__ = ["LocalRun"]

"""What travels with each remote task: the caller's budget and trace context.

The budget goes as relative milliseconds under the same key the MCP client puts in
``_meta`` (``hangguard/timeout-ms``), so clock skew between the driver and the nodes does
not matter; the trace context goes as W3C ``traceparent`` / ``tracestate`` entries written
by the configured OpenTelemetry propagator. Plain dicts of strings and numbers, so the
worker can read them whatever hangguard version the driver ran.
"""

from __future__ import annotations

import math
from typing import Any, Final

__all__ = [
    "DEADLINE_KEY",
    "GROUP_KEY",
    "TASK_KEY",
    "TIMEOUT_KEY",
    "budget_of",
    "make_meta",
]

#: The remaining budget in milliseconds (absent: no deadline); the MCP ``_meta`` key.
TIMEOUT_KEY: Final = "hangguard/timeout-ms"
#: The name of the deadline that budget comes from, so the worker reports it by name.
DEADLINE_KEY: Final = "hangguard/deadline"
TASK_KEY: Final = "hangguard/task"
GROUP_KEY: Final = "hangguard/group"


def make_meta(
    task: str, group: str, budget: float, deadline_name: str | None, carrier: dict[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = dict(carrier)
    meta[TASK_KEY] = task
    meta[GROUP_KEY] = group
    if not math.isinf(budget):
        meta[TIMEOUT_KEY] = max(0.0, budget) * 1000.0
        if deadline_name:
            meta[DEADLINE_KEY] = deadline_name
    return meta


def budget_of(meta: dict[str, Any]) -> float:
    """The budget in seconds ``meta`` carries (``math.inf`` when none).

    Raises ``ValueError`` naming the key when the value is not a non-negative number.
    """
    raw = meta.get(TIMEOUT_KEY)
    if raw is None:
        return math.inf
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not raw >= 0:
        raise ValueError(
            f"{TIMEOUT_KEY!r} must be a non-negative number of milliseconds, got {raw!r}"
        )
    return float(raw) / 1000.0

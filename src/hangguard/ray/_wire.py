"""What travels with each remote task: the caller's budget and trace context.

The budget goes as relative milliseconds under the same key the MCP client puts in
``_meta`` (``hangguard/timeout-ms``), so clock skew between the driver and the nodes does
not matter; the trace context goes as W3C ``traceparent`` / ``tracestate`` entries written
by the configured OpenTelemetry propagator. Plain dicts of strings and numbers, so the
worker can read them whatever hangguard version the driver ran.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

__all__ = [
    "DEADLINE_KEY",
    "GROUP_KEY",
    "NODE_KEY",
    "SENT_AT_KEY",
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
#: The driver's Ray node and wall-clock send time: a worker on the same node (same clock)
#: takes the time the task waited in Ray's queues off its budget; elsewhere it cannot.
NODE_KEY: Final = "hangguard/node"
SENT_AT_KEY: Final = "hangguard/sent-at"


def make_meta(
    task: str,
    group: str,
    budget: float,
    deadline_name: str | None,
    carrier: dict[str, str],
    node: str,
) -> dict[str, Any]:
    meta: dict[str, Any] = dict(carrier)
    meta[TASK_KEY] = task
    meta[GROUP_KEY] = group
    if not math.isinf(budget):
        meta[TIMEOUT_KEY] = max(0.0, budget) * 1000.0
        meta[NODE_KEY] = node
        meta[SENT_AT_KEY] = time.time()
        if deadline_name:
            meta[DEADLINE_KEY] = deadline_name
    return meta


def budget_of(meta: dict[str, Any], node: str) -> float:
    """The budget in seconds ``meta`` carries for a worker on ``node`` (``math.inf``: none).

    On the driver's own node the time since it was sent is taken off (one clock); on
    another node it is used as sent, relative, so clock skew cannot shorten or stretch it.
    Raises ``ValueError`` naming the key when the value is not a non-negative number.
    """
    raw = meta.get(TIMEOUT_KEY)
    if raw is None:
        return math.inf
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not raw >= 0:
        raise ValueError(
            f"{TIMEOUT_KEY!r} must be a non-negative number of milliseconds, got {raw!r}"
        )
    budget = float(raw) / 1000.0
    sent = meta.get(SENT_AT_KEY)
    if node and meta.get(NODE_KEY) == node and isinstance(sent, float):
        waited = time.time() - sent
        if waited > 0:
            budget = max(0.0, budget - waited)
    return budget

"""Metrics through the OpenTelemetry metrics API: task outcomes, retries, deadlines, MCP calls.

The library records; the application decides where metrics go (``setup_tracing`` installs
a ``MeterProvider``, the application installs its own, or passes one to
``hangguard.use_providers``). Until a real provider is installed the instruments live on
the API's proxy and record nothing; they are built once per provider, on first use, and
recorded to once per group, retry or MCP call (never once per task).

Instruments (names in ``_semconv``):

* ``hangguard.tasks`` (counter): tasks ended, by ``hangguard.task.outcome`` (ok, failed,
  cancelled, timeout);
* ``hangguard.retries`` (counter): retries started, by ``hangguard.retry.name``;
* ``hangguard.retry.budget_refusals`` (counter): retries the retry budget refused;
* ``hangguard.deadline.exceeded`` (counter): deadlines that fired, by
  ``hangguard.deadline.name``;
* ``hangguard.mcp.breaker.transitions`` (counter): an MCP server's circuit breaker changed
  state, by ``hangguard.mcp.breaker.state`` (the new one) and ``hangguard.mcp.server``;
* ``mcp.client.operation.duration`` (histogram, seconds): MCP requests, by
  ``mcp.method.name``, ``gen_ai.tool.name`` and, on failure, ``error.type``;
* ``hangguard.threads.abandoned`` (counter): threads left running when the group or the
  awaiting task gave up on them (a thread cannot be killed);
* ``hangguard.threads.no_free_worker`` (counter): thread tasks whose deadline passed
  before a worker of their pool was free (a saturated pool);
* ``hangguard.loop.blocked`` (histogram, seconds): event-loop blocks the watchdog saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider
from opentelemetry.util.types import AttributeValue

from ._providers import meter_provider
from ._semconv import (
    ATTR_DEADLINE_NAME,
    ATTR_ERROR_TYPE,
    ATTR_GEN_AI_TOOL_NAME,
    ATTR_MCP_BREAKER_STATE,
    ATTR_MCP_METHOD_NAME,
    ATTR_MCP_SERVER,
    ATTR_RETRY_NAME,
    ATTR_TASK_OUTCOME,
    METRIC_DEADLINE_EXCEEDED,
    METRIC_LOOP_BLOCKED,
    METRIC_MCP_BREAKER_TRANSITIONS,
    METRIC_MCP_CLIENT_OPERATION_DURATION,
    METRIC_RETRIES,
    METRIC_RETRY_BUDGET_REFUSALS,
    METRIC_TASKS,
    METRIC_THREADS_ABANDONED,
    METRIC_THREADS_NO_FREE_WORKER,
    OUTCOME_CANCELLED,
    OUTCOME_FAILED,
    OUTCOME_OK,
    OUTCOME_TIMEOUT,
    TRACER_NAME,
)
from ._version import __version__

__all__ = [
    "LOOP_BLOCKED_BUCKETS",
    "MCP_DURATION_BUCKETS",
    "OUTCOMES",
    "get_meter",
    "record_breaker_transition",
    "record_deadline_exceeded",
    "record_loop_blocked",
    "record_mcp_duration",
    "record_retry",
    "record_retry_refused",
    "record_task_outcome",
    "record_threads_abandoned",
    "record_threads_no_free_worker",
]

#: The values ``hangguard.task.outcome`` takes.
OUTCOMES: Final = frozenset({OUTCOME_OK, OUTCOME_FAILED, OUTCOME_CANCELLED, OUTCOME_TIMEOUT})

#: Bucket boundaries (seconds) the MCP semantic conventions advise for call durations.
MCP_DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


#: Bucket boundaries (seconds) of the blocked-loop histogram.
LOOP_BLOCKED_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class _Instruments:
    meter: Meter
    tasks: Counter
    retries: Counter
    refusals: Counter
    deadlines: Counter
    mcp_duration: Histogram
    threads_abandoned: Counter
    no_free_worker: Counter
    loop_blocked: Histogram
    breaker: Counter


_cache: tuple[MeterProvider, _Instruments] | None = None


def _build(provider: MeterProvider) -> _Instruments:
    meter = provider.get_meter(TRACER_NAME, __version__)
    return _Instruments(
        meter=meter,
        tasks=meter.create_counter(
            METRIC_TASKS, unit="{task}", description="Tasks finished, by outcome."
        ),
        retries=meter.create_counter(
            METRIC_RETRIES, unit="{retry}", description="Retries started after a failure."
        ),
        refusals=meter.create_counter(
            METRIC_RETRY_BUDGET_REFUSALS,
            unit="{retry}",
            description="Retries not made because the call tree's retry budget was spent.",
        ),
        deadlines=meter.create_counter(
            METRIC_DEADLINE_EXCEEDED,
            unit="{deadline}",
            description="Deadlines that fired and cancelled the work they guarded.",
        ),
        mcp_duration=meter.create_histogram(
            METRIC_MCP_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of MCP requests as seen by the client.",
            explicit_bucket_boundaries_advisory=MCP_DURATION_BUCKETS,
        ),
        threads_abandoned=meter.create_counter(
            METRIC_THREADS_ABANDONED,
            unit="{thread}",
            description="Threads left running when their group or awaiting task gave up.",
        ),
        no_free_worker=meter.create_counter(
            METRIC_THREADS_NO_FREE_WORKER,
            unit="{task}",
            description="Thread tasks whose deadline passed before a worker was free.",
        ),
        loop_blocked=meter.create_histogram(
            METRIC_LOOP_BLOCKED,
            unit="s",
            description="How long the event loop ran no callback, per block the watchdog saw.",
            explicit_bucket_boundaries_advisory=LOOP_BLOCKED_BUCKETS,
        ),
        breaker=meter.create_counter(
            METRIC_MCP_BREAKER_TRANSITIONS,
            unit="{transition}",
            description="State changes of MCP servers' circuit breakers, by the new state.",
        ),
    )


def _instruments() -> _Instruments | None:
    global _cache
    provider = meter_provider()
    if provider is None:
        return None
    cached = _cache
    if cached is not None and cached[0] is provider:
        return cached[1]
    built = _build(provider)
    _cache = (provider, built)
    return built


def get_meter() -> Meter | None:
    """hangguard's meter from the global provider, or ``None`` when nothing records."""
    inst = _instruments()
    return inst.meter if inst is not None else None


def record_task_outcome(outcome: str, n: int = 1) -> None:
    """Count ``n`` tasks that ended with ``outcome`` (ok, failed, cancelled or timeout).

    Called by the task group as each task ends::

        record_task_outcome(OUTCOME_CANCELLED)
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {outcome!r}")
    inst = _instruments()
    if inst is not None and n:
        inst.tasks.add(n, {ATTR_TASK_OUTCOME: outcome})


def record_retry(name: str | None = None) -> None:
    """Count one retry (an attempt after a failure) of the call named ``name``."""
    inst = _instruments()
    if inst is not None:
        inst.retries.add(1, {ATTR_RETRY_NAME: name} if name else None)


def record_retry_refused(name: str | None = None) -> None:
    """Count one retry the retry budget refused."""
    inst = _instruments()
    if inst is not None:
        inst.refusals.add(1, {ATTR_RETRY_NAME: name} if name else None)


def record_deadline_exceeded(name: str | None = None) -> None:
    """Count one deadline that fired (``_spans.record_deadline_exceeded`` calls this)."""
    inst = _instruments()
    if inst is not None:
        inst.deadlines.add(1, {ATTR_DEADLINE_NAME: name or ""})


def record_mcp_duration(
    seconds: float,
    *,
    method: str,
    tool: str | None = None,
    error_type: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> None:
    """Record one MCP request's duration, per the MCP semantic conventions.

    ``method`` is the JSON-RPC method (``tools/call``), ``tool`` the tool's name,
    ``error_type`` set only when the call failed (an exception's qualified name or the
    JSON-RPC error code)::

        record_mcp_duration(0.42, method="tools/call", tool="search")
    """
    inst = _instruments()
    if inst is None:
        return
    attrs: dict[str, AttributeValue] = {ATTR_MCP_METHOD_NAME: method}
    if tool:
        attrs[ATTR_GEN_AI_TOOL_NAME] = tool
    if error_type:
        attrs[ATTR_ERROR_TYPE] = error_type
    if attributes:
        attrs.update(attributes)
    inst.mcp_duration.record(max(0.0, seconds), attrs)


def record_threads_abandoned(n: int = 1) -> None:
    """Count ``n`` threads left running when their group or awaiting task gave up."""
    inst = _instruments()
    if inst is not None and n:
        inst.threads_abandoned.add(n)


def record_threads_no_free_worker(n: int = 1) -> None:
    """Count ``n`` thread tasks whose deadline passed while they waited for a worker."""
    inst = _instruments()
    if inst is not None and n:
        inst.no_free_worker.add(n)


def record_loop_blocked(seconds: float) -> None:
    """Record one event-loop block of ``seconds`` (the watchdog calls this)."""
    inst = _instruments()
    if inst is not None:
        inst.loop_blocked.record(max(0.0, seconds))


def record_breaker_transition(state: str, server: str) -> None:
    """Count one change of an MCP server's circuit breaker to ``state``."""
    inst = _instruments()
    if inst is not None:
        inst.breaker.add(1, {ATTR_MCP_BREAKER_STATE: state, ATTR_MCP_SERVER: server})

"""Span helpers and the trace vocabulary: every span, attribute and event name hangguard emits.

Only ``opentelemetry-api`` is used here. When no SDK is installed (the API's no-op or
unresolved proxy provider), :func:`get_tracer` returns ``None`` and callers skip all span
work, so untraced use costs close to nothing. docs/trace-schema.md is checked against
the constants below by a test.
"""

from __future__ import annotations

import logging
import traceback
from types import TracebackType
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from ._version import __version__

__all__ = [
    "ATTR_CANCEL_CAUSE",
    "ATTR_CANCEL_GRACE_S",
    "ATTR_CANCEL_REASON",
    "ATTR_DEADLINE_BUDGET_S",
    "ATTR_DEADLINE_NAME",
    "ATTR_ERROR_TYPE",
    "ATTR_EXCEPTION_MESSAGE",
    "ATTR_EXCEPTION_TYPE",
    "ATTR_GEN_AI_OPERATION_NAME",
    "ATTR_GEN_AI_TOOL_CALL_ARGUMENTS",
    "ATTR_GEN_AI_TOOL_CALL_RESULT",
    "ATTR_GEN_AI_TOOL_NAME",
    "ATTR_GROUP_CANCELLED",
    "ATTR_GROUP_FAILED",
    "ATTR_GROUP_LIMIT",
    "ATTR_GROUP_NAME",
    "ATTR_GROUP_SERIAL",
    "ATTR_GROUP_SIZE",
    "ATTR_GROUP_TIMED_OUT",
    "ATTR_HTTP_RESPONSE_STATUS_CODE",
    "ATTR_MCP_METHOD_NAME",
    "ATTR_MCP_SERVER",
    "ATTR_NETWORK_TRANSPORT",
    "ATTR_OP_NAME",
    "ATTR_RETRY_ATTEMPT",
    "ATTR_RETRY_ATTEMPTS",
    "ATTR_RETRY_NAME",
    "ATTR_RETRY_REMAINING_S",
    "ATTR_RETRY_SLEEP_S",
    "ATTR_SERVER_ADDRESS",
    "ATTR_SERVER_PORT",
    "ATTR_TASK_NAME",
    "ATTR_TASK_OUTCOME",
    "ATTR_TASK_STACK",
    "ATTR_TIMEOUT_S",
    "CANCEL_DEADLINE",
    "CANCEL_PARENT",
    "CANCEL_SIBLING_FAILED",
    "CANCEL_TIMEOUT",
    "ERROR_TYPE_TIMEOUT",
    "ERROR_TYPE_TOOL_ERROR",
    "EVENT_CANCELLED",
    "EVENT_CANCEL_IGNORED",
    "EVENT_DEADLINE_EXCEEDED",
    "EVENT_RETRY",
    "EVENT_RETRY_BUDGET_EXHAUSTED",
    "EVENT_RETRY_BUDGET_REFUSED",
    "METRIC_DEADLINE_EXCEEDED",
    "METRIC_MCP_CLIENT_OPERATION_DURATION",
    "METRIC_RETRIES",
    "METRIC_RETRY_BUDGET_REFUSALS",
    "METRIC_TASKS",
    "OUTCOME_CANCELLED",
    "OUTCOME_FAILED",
    "OUTCOME_OK",
    "OUTCOME_TIMEOUT",
    "SPAN_EXECUTE_TOOL",
    "SPAN_GROUP",
    "SPAN_OP",
    "SPAN_TASK",
    "TRACER_NAME",
    "error_type",
    "get_tracer",
    "guard",
    "record_deadline_exceeded",
    "record_failure",
    "safe_str",
]

logger = logging.getLogger("hangguard")

TRACER_NAME: Final = "hangguard"

# Span names (``{}`` takes the group / task / op name).
SPAN_OP: Final = "{}"
SPAN_GROUP: Final = "group {}"
SPAN_TASK: Final = "task {}"

# Attributes.
ATTR_OP_NAME: Final = "hangguard.op.name"
ATTR_GROUP_NAME: Final = "hangguard.group.name"
ATTR_GROUP_SIZE: Final = "hangguard.group.size"
ATTR_GROUP_FAILED: Final = "hangguard.group.failed"
ATTR_GROUP_CANCELLED: Final = "hangguard.group.cancelled"
ATTR_GROUP_TIMED_OUT: Final = "hangguard.group.timed_out"
ATTR_GROUP_LIMIT: Final = "hangguard.group.limit"
ATTR_GROUP_SERIAL: Final = "hangguard.group.serial"
ATTR_TIMEOUT_S: Final = "hangguard.timeout_s"
ATTR_TASK_NAME: Final = "hangguard.task.name"
ATTR_TASK_STACK: Final = "hangguard.task.stack"
ATTR_CANCEL_REASON: Final = "hangguard.cancel.reason"
ATTR_CANCEL_CAUSE: Final = "hangguard.cancel.cause"
ATTR_CANCEL_GRACE_S: Final = "hangguard.cancel_grace_s"
ATTR_DEADLINE_NAME: Final = "hangguard.deadline.name"
ATTR_DEADLINE_BUDGET_S: Final = "hangguard.deadline.budget_s"
# On retry events: the number of the attempt that failed (1-based), the most attempts
# allowed, what is being retried, the backoff before the next attempt, and the seconds
# left on the enclosing deadline when a retry did not fit.
ATTR_RETRY_ATTEMPT: Final = "hangguard.retry.attempt"
ATTR_RETRY_ATTEMPTS: Final = "hangguard.retry.attempts"
ATTR_RETRY_NAME: Final = "hangguard.retry.name"
ATTR_RETRY_SLEEP_S: Final = "hangguard.retry.sleep_s"
ATTR_RETRY_REMAINING_S: Final = "hangguard.retry.remaining_s"
ATTR_ERROR_TYPE: Final = "error.type"
# OpenTelemetry's exception attributes, on events that describe a failure the span survived.
ATTR_EXCEPTION_TYPE: Final = "exception.type"
ATTR_EXCEPTION_MESSAGE: Final = "exception.message"

# The span of one MCP tool call (OpenTelemetry GenAI / MCP conventions); the mcp SDK's
# own "MCP send tools/call <tool>" client span of each attempt nests under it.
SPAN_EXECUTE_TOOL: Final = "execute_tool {}"
ATTR_GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
ATTR_GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
ATTR_GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
ATTR_SERVER_ADDRESS: Final = "server.address"
ATTR_SERVER_PORT: Final = "server.port"
ATTR_NETWORK_TRANSPORT: Final = "network.transport"
ATTR_HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
ATTR_MCP_SERVER: Final = "hangguard.mcp.server"
# Values of error.type on that span, besides a JSON-RPC code, an HTTP status or a class.
ERROR_TYPE_TIMEOUT: Final = "timeout"
ERROR_TYPE_TOOL_ERROR: Final = "tool_error"

# Values of hangguard.cancel.reason.
CANCEL_SIBLING_FAILED: Final = "sibling_failed"
CANCEL_TIMEOUT: Final = "timeout"
CANCEL_DEADLINE: Final = "deadline"
CANCEL_PARENT: Final = "parent_cancelled"

# Events.
EVENT_CANCELLED: Final = "hangguard.cancelled"
EVENT_CANCEL_IGNORED: Final = "hangguard.cancel_ignored"
EVENT_DEADLINE_EXCEEDED: Final = "hangguard.deadline_exceeded"
EVENT_RETRY: Final = "hangguard.retry"
EVENT_RETRY_BUDGET_EXHAUSTED: Final = "hangguard.retry.budget_exhausted"
EVENT_RETRY_BUDGET_REFUSED: Final = "hangguard.retry.budget_refused"

# Metrics (instruments in _metrics.py), with the attributes only they carry.
METRIC_TASKS: Final = "hangguard.tasks"
METRIC_RETRIES: Final = "hangguard.retries"
METRIC_RETRY_BUDGET_REFUSALS: Final = "hangguard.retry.budget_refusals"
METRIC_DEADLINE_EXCEEDED: Final = "hangguard.deadline.exceeded"
ATTR_TASK_OUTCOME: Final = "hangguard.task.outcome"
# The MCP semantic conventions' client call duration, with their attribute names.
METRIC_MCP_CLIENT_OPERATION_DURATION: Final = "mcp.client.operation.duration"
ATTR_MCP_METHOD_NAME: Final = "mcp.method.name"
ATTR_GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"

# Values of hangguard.task.outcome.
OUTCOME_OK: Final = "ok"
OUTCOME_FAILED: Final = "failed"
OUTCOME_CANCELLED: Final = "cancelled"
OUTCOME_TIMEOUT: Final = "timeout"

_tracers: dict[int, tuple[trace.TracerProvider, Tracer]] = {}


def _is_noop(provider: trace.TracerProvider) -> bool:
    if isinstance(provider, trace.NoOpTracerProvider):
        return True
    # The API's proxy stands in until an application installs a provider; until then
    # every span it makes is a no-op.
    return isinstance(provider, trace.ProxyTracerProvider) and (
        getattr(trace, "_TRACER_PROVIDER", None) is None
    )


def get_tracer() -> Tracer | None:
    """hangguard's tracer from the global provider, or ``None`` when nothing records."""
    provider = trace.get_tracer_provider()
    if _is_noop(provider):
        return None
    cached = _tracers.get(id(provider))
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = provider.get_tracer(TRACER_NAME, __version__)
    _tracers[id(provider)] = (provider, tracer)
    return tracer


def error_type(exc: BaseException) -> str:
    """The ``error.type`` value of an exception: its fully qualified class name."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def safe_str(value: object) -> str:
    """``str(value)``, or a stand-in naming its type when that ``str()`` itself raises.

    Every exception message or attribute telemetry writes goes through here: an object
    that cannot be printed must not turn a task's failure into a ``TypeError``.
    """
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__qualname__}: str() failed>"


class _Guard:
    """``with guard():`` around telemetry: an ``Exception`` inside is logged and swallowed.

    The work's own result or exception goes on untouched; the telemetry failure is logged
    once, here, with its traceback. Interrupts and cancellation pass through.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        logger.warning(
            "hangguard telemetry failed; the outcome of the work is unaffected", exc_info=exc
        )
        return True


_GUARD: Final = _Guard()


def guard() -> _Guard:
    """The telemetry guard (one shared, stateless instance)."""
    return _GUARD


def _exception_event(span: Span, exc: BaseException, message: str) -> None:
    # What Span.record_exception writes, built here because the SDK's own call evaluates
    # str(exc) unguarded.
    try:
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        stack = ""
    span.add_event(
        "exception",
        {
            "exception.type": error_type(exc),
            "exception.message": message,
            "exception.stacktrace": stack,
            "exception.escaped": "True",
        },
    )


def record_failure(span: Span, exc: BaseException, *, type_: str | None = None) -> None:
    """Mark ``span`` failed by ``exc``: status ERROR, ``error.type``, the exception event.

    Never raises: a message that cannot be printed gets a stand-in, and any failure of
    the span itself is logged once and swallowed.
    """
    with _GUARD:
        if not span.is_recording():
            return
        span.set_attribute(ATTR_ERROR_TYPE, type_ or error_type(exc))
        try:
            message = str(exc)
        except Exception:
            message = safe_str(exc)
            _exception_event(span, exc, message)
        else:
            span.record_exception(exc, escaped=True)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))


def record_deadline_exceeded(name: str | None, budget: float) -> None:
    """Note a deadline that fired on the current span (and in metrics); never raises."""
    # Imported here: _metrics imports this module for its names.
    from ._metrics import record_deadline_exceeded as count_deadline_exceeded

    with _GUARD:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                EVENT_DEADLINE_EXCEEDED,
                {ATTR_DEADLINE_NAME: name or "", ATTR_DEADLINE_BUDGET_S: budget},
            )
    with _GUARD:
        count_deadline_exceeded(name)


def format_stack(frames: list[traceback.FrameSummary]) -> str:
    """A short, one-frame-a-line rendering of where a task was stuck."""
    return "\n".join(f"{f.filename}:{f.lineno} in {f.name}" for f in frames)

"""Span helpers on the OpenTelemetry API: the tracer, failures, deadlines that fired.

Only ``opentelemetry-api`` is used here. When no SDK is installed (the API's no-op or
unresolved proxy provider), :func:`get_tracer` returns ``None`` and callers skip all span
work, so untraced use costs close to nothing. The names it writes are in
:mod:`hangguard._semconv`.
"""

from __future__ import annotations

import logging
import math
import re
import traceback
from types import TracebackType
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from ._metrics import record_deadline_exceeded as count_deadline_exceeded
from ._providers import tracer_provider
from ._semconv import (
    ATTR_DEADLINE_BUDGET_S,
    ATTR_DEADLINE_NAME,
    ATTR_ERROR_TYPE,
    ATTR_OP_NAME,
    ATTR_OWN_TIMEOUT_S,
    ATTR_TASK_NAME,
    ATTR_TIMEOUT_S,
    EVENT_DEADLINE_EXCEEDED,
    SPAN_OP,
    SPAN_TASK,
    TRACER_NAME,
)
from ._version import __version__

__all__ = [
    "contained",
    "error_type",
    "format_stack",
    "get_tracer",
    "record_deadline_exceeded",
    "record_failure",
    "safe_str",
    "start_op_span",
    "start_task_span",
    "telemetry_failed",
]

logger = logging.getLogger("hangguard")

_tracers: dict[int, tuple[trace.TracerProvider, Tracer]] = {}


def get_tracer() -> Tracer | None:
    """hangguard's tracer from the injected or global provider, or ``None`` when nothing records."""
    provider = tracer_provider()
    if provider is None:
        return None
    cached = _tracers.get(id(provider))
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = provider.get_tracer(TRACER_NAME, __version__)
    _tracers[id(provider)] = (provider, tracer)
    return tracer


# The SDK's own samplers, which decide on the trace id and the parent alone: with these
# the attributes given at a span's start change no decision. Told apart by their public
# ``get_description()`` (a ParentBased names its delegates there) and their module.
_SDK_SAMPLERS: Final = "opentelemetry.sdk.trace.sampling"
_BLIND_DELEGATE: Final = re.compile(r"AlwaysOnSampler|AlwaysOffSampler|TraceIdRatioBased\{[^{}]*\}")
_BLIND_DESCRIPTIONS: Final = frozenset(
    {
        "",  # AlwaysOn, AlwaysOff, TraceIdRatioBased alone
        "ParentBased{root:,remoteParentSampled:,remoteParentNotSampled:,"
        "localParentSampled:,localParentNotSampled:}",
    }
)
# The last tracer asked about and its answer: one slot, since a process traces through
# one tracer as a rule, and a cache keyed by tracer would keep every one ever seen alive.
_blind: tuple[Tracer | None, bool] = (None, False)


def _sampler_ignores_attributes(tracer: Tracer) -> bool:
    """Whether ``tracer``'s sampler is one of the SDK's own, which never read attributes.

    Anything else (another SDK, a sampler of the user's, one that cannot be told) is taken
    to read them, so it gets them at start.
    """
    sampler = getattr(tracer, "sampler", None)  # the SDK Tracer's public attribute
    if sampler is None or type(sampler).__module__ != _SDK_SAMPLERS:
        return False
    try:
        description = sampler.get_description()
    except Exception:
        return False
    if not isinstance(description, str):
        return False
    return _BLIND_DELEGATE.sub("", description) in _BLIND_DESCRIPTIONS


def start_task_span(
    tracer: Tracer,
    name: str,
    context: otel_context.Context | None,
    extra: dict[str, str] | None = None,
) -> Span:
    """The span ``task {name}`` of one task of a group, carrying ``hangguard.task.name``.

    The name is given at start, where a sampler sees it, unless the sampler is one of the
    SDK's own, which decide on the parent and trace id alone: then it is set right after
    the start, which costs the SDK less (a single value instead of a mapping checked,
    copied for the sampling result and checked again). The span is the same either way.
    See docs/trace-schema.md.
    """
    global _blind
    cached = _blind
    if cached[0] is not tracer:
        cached = _blind = (tracer, _sampler_ignores_attributes(tracer))
    if cached[1] and extra is None:
        span = tracer.start_span(SPAN_TASK.format(name), context=context)
        span.set_attribute(ATTR_TASK_NAME, name)
        return span
    attributes = {ATTR_TASK_NAME: name}
    if extra is not None:
        attributes.update(extra)
    return tracer.start_span(SPAN_TASK.format(name), context=context, attributes=attributes)


#: How much less than its own budget an op may be left and still count as on its own.
_SAME_BUDGET_SLACK_S = 0.001


def start_op_span(tracer: Tracer, name: str, seconds: float, left: float) -> Span:
    """The span of one run of an op (async or sync), with the budget in force on it.

    The budget in force is the shorter of the op's own (``seconds``) and what the
    enclosing deadline leaves (``left``, read by the caller, as spans sit below deadlines):
    an op with a 300 s budget inside a 3 s one has 3 s at most, and that is what
    ``hangguard.timeout_s`` says; its own budget is kept beside it
    (``hangguard.own_timeout_s``) only when it differs. Failures and cancellations are
    recorded by the caller (as a cancellation, not an error), so the SDK's own recording
    is off.
    """
    attributes: dict[str, str | float] = {ATTR_OP_NAME: name}
    # A sync op starts its span inside its own deadline, which then leaves a hair less
    # than ``seconds``: that is still its own budget, not an inherited one.
    in_force = seconds if left >= seconds - _SAME_BUDGET_SLACK_S else left
    if not math.isinf(in_force):
        attributes[ATTR_TIMEOUT_S] = in_force
    if in_force != seconds:
        attributes[ATTR_OWN_TIMEOUT_S] = seconds
    return tracer.start_span(
        SPAN_OP.format(name),
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )


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


class _Contained:
    """``with contained():`` around telemetry: an ``Exception`` inside is logged and swallowed.

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
        telemetry_failed(exc)
        return True


def telemetry_failed(exc: Exception) -> None:
    """Log, once with its traceback, a telemetry failure that was swallowed.

    What ``with contained():`` does with it; hot paths write ``try``/``except Exception``
    around their telemetry and call this, which costs nothing when nothing fails.
    """
    logger.warning(
        "hangguard telemetry failed; the outcome of the work is unaffected", exc_info=exc
    )


_CONTAINED: Final = _Contained()


def contained() -> _Contained:
    """Telemetry failures contained here (one shared, stateless instance)."""
    return _CONTAINED


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
    with _CONTAINED:
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

    with _CONTAINED:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                EVENT_DEADLINE_EXCEEDED,
                {ATTR_DEADLINE_NAME: name or "", ATTR_DEADLINE_BUDGET_S: budget},
            )
    with _CONTAINED:
        count_deadline_exceeded(name)


def format_stack(frames: list[traceback.FrameSummary]) -> str:
    """A short, one-frame-a-line rendering of where a task was stuck."""
    return "\n".join(f"{f.filename}:{f.lineno} in {f.name}" for f in frames)

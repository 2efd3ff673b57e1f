"""Which OpenTelemetry providers hangguard records to: injected ones, else the global ones.

Like the OpenTelemetry contrib instrumentations (``instrument(tracer_provider=...)``),
hangguard takes providers from its caller and never installs one. :func:`use_providers`
sets them for a block and everything started inside it (tasks and threads inherit the
context), so a test or an embedding application can record to its own provider without
touching OpenTelemetry's process-wide globals. Only public OpenTelemetry API is used.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import metrics, trace

__all__ = ["meter_provider", "tracer_provider", "use_providers"]

_tracer_provider: contextvars.ContextVar[trace.TracerProvider | None] = contextvars.ContextVar(
    "hangguard_tracer_provider", default=None
)
_meter_provider: contextvars.ContextVar[metrics.MeterProvider | None] = contextvars.ContextVar(
    "hangguard_meter_provider", default=None
)


def tracer_provider() -> trace.TracerProvider | None:
    """The provider spans go to, or ``None`` when nothing would record them.

    The API's proxy (no provider installed yet) and the no-op provider record nothing, so
    hangguard skips all span work for them.
    """
    provider = _tracer_provider.get() or trace.get_tracer_provider()
    if isinstance(provider, (trace.NoOpTracerProvider, trace.ProxyTracerProvider)):
        return None
    return provider


def meter_provider() -> metrics.MeterProvider | None:
    """The provider metrics go to (the global one, or its proxy until one is installed)."""
    provider = _meter_provider.get() or metrics.get_meter_provider()
    if isinstance(provider, metrics.NoOpMeterProvider):
        return None
    return provider


@contextmanager
def use_providers(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Iterator[None]:
    """Record hangguard's spans and metrics to these providers inside the block.

    A provider left ``None`` stays the enclosing one (else OpenTelemetry's global)::

        provider = TracerProvider()
        with hangguard.use_providers(tracer_provider=provider):
            asyncio.run(main())
    """
    tokens: list[tuple[contextvars.ContextVar[object], contextvars.Token[object]]] = []
    if tracer_provider is not None:
        tokens.append((_tracer_provider, _tracer_provider.set(tracer_provider)))  # type: ignore[arg-type]
    if meter_provider is not None:
        tokens.append((_meter_provider, _meter_provider.set(meter_provider)))  # type: ignore[arg-type]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)

"""Application-side OpenTelemetry setup: :func:`setup_tracing` and :func:`local_spans`.

The library itself never calls this: it only uses the API and records into whatever
provider the application installed. An application that wants hangguard's traces calls
``setup_tracing()`` once at start-up. It installs an SDK ``TracerProvider`` and
``MeterProvider`` exporting over OTLP as the standard ``OTEL_*`` variables say (arguments
override them), or, with no endpoint configured, the local exporter of
:mod:`hangguard.tracing._local`.

This module builds and installs the SDK pieces; the settings are resolved in
:mod:`hangguard.tracing._settings`, the returned handle and its bounded shutdown are in
:mod:`hangguard.tracing._handle` and :mod:`hangguard.tracing._bounded_export`. Their public names
are re-exported here as before. The SDK is imported only when ``setup_tracing()`` runs.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from .. import _config
from .._config import ENV_TRACE_FILE
from .._deadline import check_timeout
from .._exceptions import ConfigError
from .._validate import check_whole
from .._watchdog import enable as enable_watchdog
from .._watchdog import resolve_threshold
from ._bounded_export import (
    Counters,
    ExportStats,
    make_batch_processor,
    make_counting_processor,
    make_guard,
    make_metric_guard,
    register_processor_metric,
)
from ._handle import TracingHandle
from ._records import SpanRecord
from ._settings import DEFAULT_SHUTDOWN_TIMEOUT, TracingSettings, resolve_settings

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExporter
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

    from ._local import LocalSpanExporter

_log = logging.getLogger("hangguard")

__all__ = [
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "ExportStats",
    "TracingHandle",
    "TracingSettings",
    "local_spans",
    "resolve_settings",
    "setup_tracing",
]


def _build_sampler(name: str, ratio: float | None) -> Sampler:
    from opentelemetry.sdk.trace import sampling

    root: Sampler
    if name.endswith("always_on"):
        root = sampling.ALWAYS_ON
    elif name.endswith("always_off"):
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(1.0 if ratio is None else ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def _span_exporter(settings: TracingSettings, headers: Mapping[str, str] | None) -> SpanExporter:
    # The timeout is always passed: the exporter would otherwise parse the variable itself.
    timeout = settings.traces_timeout
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=settings.traces_endpoint,
            headers=dict(headers) if headers else None,
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=settings.traces_endpoint, headers=headers, timeout=timeout)


_TEMPORALITY_ENV = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
_HISTOGRAM_ENV = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"


def _metric_preferences() -> tuple[dict[type, Any], dict[type, Any]]:
    """Temporality and aggregation preferences, from the variables the OTLP exporters read.

    Resolved here, once, and given both to the exporter and to its guard, so that neither
    has to be asked for them afterwards (the exporters keep them private).
    """
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import AggregationTemporality
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    instruments = (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
    choice = os.environ.get(_TEMPORALITY_ENV, "").strip().lower() or "cumulative"
    # The specification's table of each preference.
    deltas: dict[str, tuple[type, ...]] = {
        "cumulative": (),
        "delta": (Counter, Histogram, ObservableCounter),
        "lowmemory": (Counter, Histogram),
    }
    if choice not in deltas:
        raise ConfigError(
            f"{_TEMPORALITY_ENV} must be cumulative, delta or lowmemory, got {choice!r}",
            name=_TEMPORALITY_ENV,
            value=choice,
        )
    temporality: dict[type, Any] = {
        i: delta if i in deltas[choice] else cumulative for i in instruments
    }
    histogram = os.environ.get(_HISTOGRAM_ENV, "").strip().lower()
    aggregation: dict[type, Any] = {}
    if histogram == "base2_exponential_bucket_histogram":
        aggregation[Histogram] = ExponentialBucketHistogramAggregation()
    elif histogram not in ("", "explicit_bucket_histogram"):
        raise ConfigError(
            f"{_HISTOGRAM_ENV} must be explicit_bucket_histogram or "
            f"base2_exponential_bucket_histogram, got {histogram!r}",
            name=_HISTOGRAM_ENV,
            value=histogram,
        )
    return temporality, aggregation


def _metric_exporter(
    settings: TracingSettings,
    headers: Mapping[str, str] | None,
    temporality: dict[type, Any],
    aggregation: dict[type, Any],
) -> MetricExporter:
    timeout = settings.metrics_timeout
    if settings.metrics_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(
            endpoint=settings.metrics_endpoint,
            headers=dict(headers) if headers else None,
            timeout=timeout,
            preferred_temporality=temporality,
            preferred_aggregation=aggregation,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(
        endpoint=settings.metrics_endpoint,
        headers=headers,
        timeout=timeout,
        preferred_temporality=temporality,
        preferred_aggregation=aggregation,
    )


def _batch(guard: SpanExporter, counters: Counters, settings: TracingSettings) -> SpanProcessor:
    return make_batch_processor(
        guard,
        counters,
        max_queue_size=settings.max_queue_size,
        max_export_batch_size=settings.max_export_batch_size,
        schedule_delay=settings.schedule_delay,
    )


_active_handle: TracingHandle | None = None


def local_spans() -> list[SpanRecord]:
    """Spans held by the local exporter of the last :func:`setup_tracing`; ``[]`` if none.

    A CLI or a test reads what a traced run produced::

        hangguard.setup_tracing()
        asyncio.run(main())
        print(len(hangguard.tracing.local_spans()))
    """
    handle = _active_handle
    if handle is None or handle._local is None:
        return []
    return handle.local_spans()


def _check_globals_free() -> None:
    # Only the API's proxy stands in while no provider is installed (public API only).
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        raise RuntimeError(_GLOBAL_TAKEN.format("TracerProvider"))


_GLOBAL_TAKEN = (
    "a global {} is already installed, and OpenTelemetry allows only one: call "
    "setup_tracing() once, before anything else sets one, or pass set_global=False and use "
    "handle.provider yourself"
)


def setup_tracing(
    service_name: str | None = None,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    sampler: Sampler | str | None = None,
    sampler_arg: float | None = None,
    metrics_enabled: bool = True,
    metric_export_interval: float = 60.0,
    export_timeout: float | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    trace_file: str | os.PathLike[str] | None = None,
    max_local_spans: int = 10_000,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
    set_global: bool = True,
    loop_block_threshold: float | None = None,
    ps: bool | None = None,
    snapshot_after: float | None = None,
    record_on_sigterm: bool | None = None,
) -> TracingHandle:
    """Install an OpenTelemetry SDK tracer and meter provider exporting hangguard's telemetry.

    For applications (the library never calls it). Configuration follows the standard
    variables, and each argument overrides its variable:

    =========================  =====================================================
    With no endpoint at all, spans stay in-process (see :func:`local_spans`) instead of
    failing. A span that finds the export queue full is dropped and counted
    (``stats().dropped``, the ``otel.sdk.processor.span.processed`` metric), and
    ``shutdown()`` then returns ``False``. ``shutdown_timeout`` bounds
    :meth:`TracingHandle.shutdown` and the process exit whatever the collector does.
    ``ps`` (``HANGGUARD_PS``; on unless it says 0) starts the watcher thread that
    ``hangguard ps PID`` asks and that exports a live snapshot of work still open after
    ``snapshot_after`` seconds (``HANGGUARD_SNAPSHOT_AFTER``, 10; ``math.inf``: none).
    ``record_on_sigterm`` (``HANGGUARD_RECORD_ON_SIGTERM``, on) installs a SIGTERM handler
    that ends the open spans as ``terminated``, flushes, then chains to the previous
    handler (docs/debugging-hangs.md).
    Raises :class:`ConfigError` naming the argument or variable that is wrong, and
    ``RuntimeError`` if a global provider is already set::

        tracing = hangguard.setup_tracing(service_name="research-agent")
        asyncio.run(main())   # at exit: flushed within 2 s, or the rest dropped
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            InMemoryMetricReader,
            MetricReader,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import Sampler as SamplerBase
    except ImportError as exc:
        raise ImportError(
            "setup_tracing needs the OpenTelemetry SDK and OTLP exporters: "
            "pip install 'hangguard[otlp]'"
        ) from exc

    global _active_handle
    if sampler is not None and not isinstance(sampler, (str, SamplerBase)):
        raise TypeError(f"sampler must be a sampler name or a Sampler, got {sampler!r}")
    settings = resolve_settings(
        endpoint=endpoint,
        protocol=protocol,
        sampler=sampler if isinstance(sampler, str) else None,
        sampler_arg=sampler_arg,
        shutdown_timeout=shutdown_timeout,
        trace_file=trace_file,
        export_timeout=export_timeout,
        max_queue_size=max_queue_size,
        max_export_batch_size=max_export_batch_size,
    )
    if isinstance(sampler, SamplerBase):
        settings_sampler: Sampler = sampler
        settings = replace(settings, sampler=sampler.get_description(), sampler_arg=None)
    else:
        settings_sampler = _build_sampler(settings.sampler, settings.sampler_arg)
    interval = check_timeout(metric_export_interval, "metric_export_interval")
    if interval == 0 or math.isinf(interval):
        raise ValueError("metric_export_interval must be > 0 and finite")
    check_whole(max_local_spans, "max_local_spans")
    if set_global:
        _check_globals_free()
    watchdog_threshold = resolve_threshold(loop_block_threshold)
    ps_on, snapshot_s, on_sigterm = _inflight_settings(ps, snapshot_after, record_on_sigterm)

    attrs: dict[str, Any] = dict(resource_attributes or {})
    if service_name is not None:
        if not isinstance(service_name, str) or not service_name:
            raise ValueError(f"service_name must be a non-empty string, got {service_name!r}")
        attrs["service.name"] = service_name
    resource = Resource.create(attrs)

    counters = Counters()
    provider = TracerProvider(resource=resource, sampler=settings_sampler, shutdown_on_exit=False)
    provider.add_span_processor(make_counting_processor(counters))
    local: LocalSpanExporter | None = None
    span_exporter: SpanExporter
    if settings.exporter == "otlp":
        span_exporter = _span_exporter(settings, headers)
        guard = make_guard(span_exporter, counters)
        batching = True
        provider.add_span_processor(_batch(guard, counters, settings))
    else:
        from ._local import LocalSpanExporter

        try:
            local = LocalSpanExporter(max_spans=max_local_spans, trace_file=settings.trace_file)
        except OSError as exc:
            source = "trace_file" if trace_file is not None else ENV_TRACE_FILE
            raise ConfigError(
                f"{source}={settings.trace_file!r} cannot be opened for appending spans: {exc}",
                name=source,
                value=settings.trace_file,
            ) from exc
        span_exporter = local
        guard = make_guard(local, counters)
        # In memory only, export is a conversion and an append; with a file it is disk
        # I/O, which belongs on the batch thread rather than on the event loop.
        batching = local.trace_file is not None
        provider.add_span_processor(
            _batch(guard, counters, settings) if batching else SimpleSpanProcessor(guard)
        )

    meter_provider: MeterProvider | None = None
    memory_reader: InMemoryMetricReader | None = None
    metric_guard: Any = None
    if metrics_enabled:
        reader: MetricReader
        if settings.metrics_endpoint is not None:
            temporality, aggregation = _metric_preferences()
            metric_guard = make_metric_guard(
                _metric_exporter(settings, headers, temporality, aggregation),
                settings.metrics_endpoint,
                preferred_temporality=temporality,
                preferred_aggregation=aggregation,
            )
            reader = PeriodicExportingMetricReader(
                metric_guard, export_interval_millis=interval * 1000
            )
        else:
            reader = memory_reader = InMemoryMetricReader()
        meter_provider = MeterProvider(
            resource=resource, metric_readers=[reader], shutdown_on_exit=False
        )
        if batching:
            register_processor_metric(meter_provider, counters)

    handle = TracingHandle(
        settings=settings,
        provider=provider,
        meter_provider=meter_provider,
        metric_reader=memory_reader,
        local_exporter=local,
        span_exporter=span_exporter,
        guard=guard,
        metric_guard=metric_guard,
        counters=counters,
        is_global=set_global,
    )
    if set_global:
        if meter_provider is not None:
            # The API has no public "is one installed?" for meters: install, then check
            # ours is the one in force (the API keeps the first and logs a warning).
            metrics.set_meter_provider(meter_provider)
            if metrics.get_meter_provider() is not meter_provider:
                handle.shutdown(timeout=0.5)
                raise RuntimeError(_GLOBAL_TAKEN.format("MeterProvider"))
        trace.set_tracer_provider(provider)
        _active_handle = handle
    enable_watchdog(watchdog_threshold)
    _start_inflight(handle, ps_on, snapshot_s, on_sigterm)
    return handle


def _inflight_settings(
    ps: bool | None, snapshot_after: float | None, record_on_sigterm: bool | None
) -> tuple[bool, float, bool]:
    """The ps watcher, snapshot threshold and SIGTERM recording: each argument over its env."""
    if ps is not None and not isinstance(ps, bool):
        raise TypeError(f"ps must be True, False or None, got {ps!r}")
    if record_on_sigterm is not None and not isinstance(record_on_sigterm, bool):
        raise TypeError(f"record_on_sigterm must be True, False or None, got {record_on_sigterm!r}")
    env_ps = _config.ps()
    ps_on = ps if ps is not None else (env_ps is not False)
    if snapshot_after is None:
        after = _config.snapshot_after()
    else:
        after = check_timeout(snapshot_after, "snapshot_after")
        if after == 0:
            raise ValueError("snapshot_after must be > 0 (math.inf: no snapshots)")
    on_sigterm = record_on_sigterm if record_on_sigterm is not None else _config.record_on_sigterm()
    return ps_on, after, on_sigterm


def _start_inflight(handle: TracingHandle, ps_on: bool, after: float, on_sigterm: bool) -> None:
    from .. import _ps
    from .._snapshots import ticker
    from ._terminate import install

    install(handle, on_sigterm=on_sigterm)
    if ps_on:
        try:
            _ps.start(ticker(after, lambda seconds: handle.force_flush(seconds)))
        except (OSError, _ps.PsError) as exc:
            _log.warning(
                "hangguard: the ps watcher cannot start (%s); ps and snapshots are off", exc
            )
